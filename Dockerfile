# famfs-csi image: the CSI driver (controller and node modes), the FUSE server and the famfs CLI.
#
#   docker build -t famfs-csi:dev .
#
# Stage 1 compiles the native addon (node-addon-api + libfuse3) and the TypeScript; stage 2 carries
# only what runs: node, the fuse3 runtime (fusermount3, libfuse3.so) and the production node_modules.
# Without a registry, point the base images at local ones (both stages need Debian bookworm with Node.js
# >= 20.15 at /usr/local/bin/node):
#   docker build --build-arg BUILD_IMAGE=my/node-build --build-arg RUNTIME_IMAGE=my/node-slim -t famfs-csi:dev .
# `npm run cluster -- up` builds the runtime stage of this file without any container engine
# (scripts/cluster-images.sh follows its instructions one by one), so keep that stage to FROM, RUN, WORKDIR,
# COPY --from=build /src/..., ENV and ENTRYPOINT; docs/install.md says how to build it.

ARG NODE_VERSION=20
ARG BUILD_IMAGE=node:${NODE_VERSION}-bookworm
ARG RUNTIME_IMAGE=node:${NODE_VERSION}-bookworm-slim

FROM ${BUILD_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libfuse3-dev fuse3 pkg-config python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, so source edits do not invalidate the npm layer. --ignore-scripts: the
# package's own install script needs the sources, it runs after the COPY below.
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts
COPY tsconfig.json binding.gyp ./
COPY native ./native
COPY proto ./proto
COPY cmd ./cmd
COPY pkg ./pkg
RUN node native/build.js --force \
 && npx tsc -p . \
 && npm prune --omit=dev

FROM ${RUNTIME_IMAGE} AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends fuse3 libfuse3-3 util-linux \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/famfs-csi
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/build/Release/famfs_native.node ./build/Release/famfs_native.node
COPY --from=build /src/dist/cmd ./dist/cmd
COPY --from=build /src/dist/pkg ./dist/pkg
COPY --from=build /src/proto ./proto
# Small launchers so the chart can call the binaries by name (famfs-csi, famfs-fused, famfs).
# famfs-csi runs with a 4 MiB young-generation semi-space (V8's default grows it to 16 MiB): the
# default's 32 MiB of new space was over a quarter of the controller's anonymous memory with 10,000
# volumes (117 MiB; 81 MiB with 4, 106 MiB with 8). The price is more scavenges: ~7% more CPU per
# call than the default, 8 MiB ~2% (bench/csi; testkit's controller spawn uses the same flag).
RUN for b in famfs-fused famfs; do \
      printf '#!/bin/sh\nexec node /opt/famfs-csi/dist/cmd/%s.js "$@"\n' "$b" > /usr/local/bin/$b; \
      chmod 0755 /usr/local/bin/$b; \
    done && \
    printf '#!/bin/sh\nexec node --max-semi-space-size=4 /opt/famfs-csi/dist/cmd/famfs-csi.js "$@"\n' > /usr/local/bin/famfs-csi && \
    chmod 0755 /usr/local/bin/famfs-csi
ENV NODE_ENV=production
# The node plugin and FUSE server run privileged as root (mounts, /dev/fuse, devdax); the image
# does not pick a user so that the chart's securityContext decides.
ENTRYPOINT ["famfs-csi"]

{
  "targets": [
    {
      "target_name": "famfs_native",
      "sources": [
        "native/src/addon.cc",
        "native/src/memaccess.cc",
        "native/src/device.cc",
        "native/src/fuse_table.cc",
        "native/src/fuse_server.cc",
        "native/src/fuse_addon.cc",
        "native/src/fuse_handover.cc",
        "native/src/fuse_deposit.cc",
        "native/src/mount.cc",
        "native/src/famfs_crc.cc",
        "native/src/famfs_decode.cc",
        "native/src/famfs_tree.cc",
        "native/src/famfs_fsck.cc",
        "native/src/crc32_fold.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-std=c++17", "-O2", "-Wall", "-Wextra", "<!@(pkg-config --cflags fuse3)"],
      "libraries": ["<!@(pkg-config --libs fuse3)", "-lpthread"]
    },
    {
      "target_name": "famfs_test",
      "sources": ["native/src/addon.cc", "native/src/memaccess.cc", "native/src/device.cc", "native/test/fault_stress.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-std=c++17", "-O2", "-Wall", "-Wextra"],
      "libraries": ["-lpthread"]
    },
    {
      "target_name": "famfs_bench",
      "sources": ["native/bench/memcpy_bench.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-std=c++17", "-O2", "-Wall", "-Wextra"],
      "libraries": ["-lpthread"]
    }
  ]
}

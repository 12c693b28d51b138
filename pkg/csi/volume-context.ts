// volume_context keys: written by the controller into CreateVolume's answer, read by the node
// plugin at NodeStage/NodePublish. Here, not in either service, so neither imports the other.

/** The famfs memory pool the volume lives in. */
export const CTX_POOL = 'famfs.csi.cxl.io/pool';
/** The volume's sharing policy ("serial" or "multi-writer", see params.ts). */
export const CTX_SHARING = 'famfs.csi.cxl.io/sharing';
/** The volume's famfs file, relative to the mount point. */
export const CTX_FILE = 'famfs.csi.cxl.io/file';
/**
 * A zero-copy read-only share (volumes.ts): the volume id whose famfs directory the node publishes,
 * read-only, instead of a file of the share's own.
 */
export const CTX_SHARE_OF = 'famfs.csi.cxl.io/share-of';

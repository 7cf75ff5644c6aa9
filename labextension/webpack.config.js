// Merged by @jupyter/builder into its rspack config (package.json jupyterlab.webpackConfig).
// Module and chunk ids by order rather than by a hash of each module's path, so the committed
// build in ../slicehub/extensions/labextension is byte-for-byte the same from any checkout directory.
module.exports = {
  optimization: {
    moduleIds: 'natural',
    chunkIds: 'natural'
  }
};

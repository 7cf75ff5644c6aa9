"""Slicehub's notebook-side extensions (the kernel extension binding CuPy and Dask-CUDA to the
slice, the Jupyter server extension and the JupyterLab status bar). Filled in by later work; the
slice reaches the server today through the SLICEHUB_* environment variables."""

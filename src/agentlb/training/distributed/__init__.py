"""Training past one machine: the pipeline on a Dask cluster."""

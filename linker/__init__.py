"""linker: the data plane (pre-fork master supervising trio/h11 workers). Arrives with its issue."""

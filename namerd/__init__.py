"""namerd: the name service. It stores dtabs per namespace and serves the namerd HTTP API."""

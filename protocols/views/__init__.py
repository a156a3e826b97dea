"""HTTP views of the protocol endpoints, one module per wire format."""

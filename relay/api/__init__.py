"""HTTP route groups: one module per surface; each decodes, calls the service, encodes."""

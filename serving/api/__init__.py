"""HTTP routes, one module per resource; each only translates HTTP to a policy call and back."""

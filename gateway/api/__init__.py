"""One module per API endpoint: decode the caller's wire shape, resolve the model, translate, serve."""

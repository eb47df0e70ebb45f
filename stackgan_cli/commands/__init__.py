"""One module per CLI command: options are parsed here, work is done in the library."""

"""The request core: what a request does between its wire format and its providers, apart from HTTP."""

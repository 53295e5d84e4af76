"""One module per domain; importing this package registers every actor with `colmena.broker`."""

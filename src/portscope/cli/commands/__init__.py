"""One module per subcommand; each offers ``register(subparsers)`` and sets ``run``."""

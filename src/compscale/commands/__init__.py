"""The ``compscale`` subcommands, one module per area; :data:`compscale.cli.COMMAND_MODULES` lists them."""

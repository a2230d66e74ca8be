"""CLI subcommands; see jaxmerge/cli.py for the contract each module follows."""

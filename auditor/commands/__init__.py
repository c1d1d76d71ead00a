"""Subcommands of `auditor`: one module each, discovered by auditor.cli."""

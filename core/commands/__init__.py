"""The `stave` subcommands that run batches: process, resume, status."""

"""The CLI's command groups, one module each (see stillhouse.cli)."""

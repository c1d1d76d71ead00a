"""`auditor tui`: a Textual app over run directories. It only reads run files (via auditor.view.run)."""

"""The recipient web portal."""

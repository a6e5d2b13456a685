"""The HTTP API for applications: send mail, read its status, manage quarantine and portal."""

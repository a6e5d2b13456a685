"""Real peers the tests talk to over loopback: DNS, SMTP sinks, Postfix, the gateway process."""

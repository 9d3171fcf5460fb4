"""The gateway: the only public surface. Owns people, tickets, keys, decisions and the access log."""

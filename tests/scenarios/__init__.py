"""End to end, across modules: bad input, attacks, admin mistakes, kills, faults, systemd."""

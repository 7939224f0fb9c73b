"""The process around the actors: the `icall` command and its sub-commands, the
service's wiring and start/stop order, systemd notification, metrics, logging set-up
and the demo."""

"""The ssh client both the ssh backend and torchrun's node agents on hosts use: host specs and
client options (hosts.py), command lines (commands.py), connections (transport.py), and the
supervisor that runs on a host (remote.py, stdlib only). Shared here so no backend imports
another."""

"""Errors a user can fix by changing a flag, a config value or an input file."""


class UserError(Exception):
  """Bad input, told to the user as one clear line (main.py prints it and exits 1)."""

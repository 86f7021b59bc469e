"""Pure functions over an Inventory: they never open files."""

"""World-model parts shared by two or more methods."""

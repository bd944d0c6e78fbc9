"""RetinaNet for detecting people in crowds: the library behind the root scripts (README, "Layout and development")."""

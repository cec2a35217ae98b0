"""Navigation from memory: the map of what the robot has seen and the planner on it
(:mod:`vln_core.nav.memory_map`, :mod:`vln_core.nav.navigator`)."""

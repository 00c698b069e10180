"""Device meshes, logical-axis rules and multi-host data assembly. The model names axes
logically; which mesh axis each logical name lands on is configuration."""

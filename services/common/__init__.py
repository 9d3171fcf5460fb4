"""Infrastructure every service uses the same way: errors, request ids, metrics, health."""

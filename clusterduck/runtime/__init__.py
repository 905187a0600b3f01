"""What runs inside every spout and worker process."""

"""Text encoders: captions -> vectors."""

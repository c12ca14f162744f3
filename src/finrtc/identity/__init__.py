"""Identity checks in the call: liveness challenge, face vs ID portrait, sealed evidence."""

"""Foundation models: the weight store, the hub and one wrapper per library."""

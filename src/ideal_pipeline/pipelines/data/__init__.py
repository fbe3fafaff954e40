"""Real data in: the victim's training set and the test set, never shown to IDEAL."""

"""What the tests share: worlds to back up, ways to make runs fail, trees to compare."""

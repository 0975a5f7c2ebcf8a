"""Run folders: the new-folder check and the lock (folder.py), settings defined once (settings.py), file
fingerprints."""

"""Joint multislice ptychographic tomography: the volume refined directly against every tilt's 4D-STEM data."""

"""The lite profile: openSMILE eGeMAPS features and the profile that needs no downloaded weights."""

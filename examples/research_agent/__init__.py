"""An example agent that researches questions through the gateway, with its tests."""

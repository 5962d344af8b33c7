"""Reading and writing: the decoder (reader), the encoders and atomic output (writer), background plates, and
render-farm parts and their join."""

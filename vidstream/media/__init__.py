"""Media handling: probing, FFmpeg command lines, Whisper, subtitles. Pure where possible."""

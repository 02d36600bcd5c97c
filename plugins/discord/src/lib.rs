//! Example ballast integration: discord.

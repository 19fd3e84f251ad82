"""Staff roster pipeline: Edu-V and SIS exports -> DuckDB -> pandera gates -> Ed-Fi/WISEdata and LinkIt!."""

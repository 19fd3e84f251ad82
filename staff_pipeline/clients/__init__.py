"""One client per API: Edu-V Employees, Ed-Fi / WISEdata, LinkIt!."""

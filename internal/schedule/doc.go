// Package schedule parses job schedules (intervals such as "6h" or cron expressions such as
// "0 3 * * *" and "@daily"), decides when a job is due, catching up once after downtime
// instead of in a burst, and runs a Runner that starts due jobs on a timer.
package schedule

/*-------------------------------------------------------------------------
 *
 * jobs.h
 *	  The worker's side of jobs that wait for Unipile's answers.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SAM_JOBS_H
#define SAM_JOBS_H

extern bool sam_service_jobs(void);
extern bool sam_jobs_pending(void);
extern void sam_jobs_release_all(void);

#endif							/* SAM_JOBS_H */

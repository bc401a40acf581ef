/** The job view lives in shared/: the notifier renders webhook bodies with it too. */
export { jobView, type JobView } from '../shared/job-view.js';

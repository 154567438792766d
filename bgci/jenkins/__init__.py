"""Jenkins: job definitions rendered through jenkins-job-builder (`jobs`), pushed (`push`) and
triggered (`builds`) through the python-jenkins transport (`client`)."""

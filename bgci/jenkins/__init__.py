"""Jenkins: job definitions rendered through jenkins-job-builder (`jobs`), pushed and triggered
through python-jenkins (`client`)."""

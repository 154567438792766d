package Acme::BgciSample::V1;
use strict;
use warnings;

our $VERSION = '0.01';

# Only in Acme-BgciSample-0.01: lets tests check that a dependency change
# removes the modules of the previous version.
sub flavour { 'V1' }

1;

package Acme::BgciSample::V2;
use strict;
use warnings;

our $VERSION = '0.02';

# Only in Acme-BgciSample-0.02: lets tests check that a dependency change
# removes the modules of the previous version.
sub flavour { 'V2' }

1;

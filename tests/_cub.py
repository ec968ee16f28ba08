"""cub10's taxonomy below Animalia, Chordata, Aves (helpers of the figure tests)."""

#: cub10's ten species (one kingdom, phylum and class above): 4 orders = 4 families (one partition), 7 genera.
CUB = [("Charadriiformes", "Alcidae", "Aethia", "Aethia cristatella"),
       ("Charadriiformes", "Alcidae", "Aethia", "Aethia psittacula"),
       ("Charadriiformes", "Alcidae", "Aethia", "Aethia pusilla"),
       ("Charadriiformes", "Alcidae", "Cerorhinca", "Cerorhinca monocerata"),
       ("Cuculiformes", "Cuculidae", "Crotophaga", "Crotophaga sulcirostris"),
       ("Passeriformes", "Icteridae", "Agelaius", "Agelaius phoeniceus"),
       ("Passeriformes", "Icteridae", "Euphagus", "Euphagus cyanocephalus"),
       ("Procellariiformes", "Diomedeidae", "Phoebastria", "Phoebastria immutabilis"),
       ("Procellariiformes", "Diomedeidae", "Phoebastria", "Phoebastria nigripes"),
       ("Procellariiformes", "Diomedeidae", "Phoebetria", "Phoebetria fusca")]
